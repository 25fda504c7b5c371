"""``python -m bench``: the reproducible benchmark (issue 4); ``python -m bench --help`` for options."""

from bench.harness import main

raise SystemExit(main())
