"""One module per engine, each a ``functools.singledispatch`` ``translate`` that fails closed."""
