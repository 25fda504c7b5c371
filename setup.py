"""Build hook: the optional native extensions (metadata lives in pyproject.toml).

Each is a C fast path with a pure-Python (Arrow/polars) fallback that gives the same results:
without a C compiler the install still succeeds and everything runs without them.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sigma_arrow._cdecode",
            sources=["sigma_arrow/_cdecode.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        ),
        Extension(  # the JSON Lines encoder of match records (sigma_arrow/sinks/text.py)
            "sigma_arrow._cencode",
            sources=["sigma_arrow/_cencode.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        ),
        Extension(  # the multi-literal scanner of the engine's literal pass (sigma_arrow/engine/literals.py)
            "sigma_arrow._cscan",
            sources=["sigma_arrow/_cscan.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        ),
        Extension(  # dictionary encoding of the engine's column views (sigma_arrow/engine/columns.py)
            "sigma_arrow._cdict",
            sources=["sigma_arrow/_cdict.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        ),
        Extension(  # the native EVTX parser writing each record's JSON (sigma_arrow/readers/evtx.py)
            "sigma_arrow._cevtx",
            sources=["sigma_arrow/_cevtx.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            libraries=["z"],
            optional=True,
        ),
        Extension(  # the rule algebra over distinct-value masks (sigma_arrow/engine/native.py)
            "sigma_arrow._calgebra",
            sources=["sigma_arrow/_calgebra.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        ),
    ]
)
