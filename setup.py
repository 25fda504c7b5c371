"""Build hook: the optional native JSON decoder (metadata lives in pyproject.toml).

``sigma_arrow._cdecode`` is the C fast path of ``sigma_arrow.flatten.decode_lines``. It is optional:
without a C compiler the install still succeeds and decoding runs in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sigma_arrow._cdecode",
            sources=["sigma_arrow/_cdecode.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
