"""The one exception tree of sigma-arrow (re-exported by ``sigma_arrow``)."""

from __future__ import annotations


class SigmaArrowError(Exception):
    """Root of every error sigma-arrow raises on purpose."""


class RuleError(SigmaArrowError):
    """A rule could not be loaded or compiled; prints as ``path:line:col: rule <id>: message``."""

    def __init__(
        self,
        message: str,
        *,
        path: str = "<string>",
        line: int = 1,
        col: int = 1,
        rule_id: str | None = None,
        status: str = "error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.col = col
        self.rule_id = rule_id
        #: "error" (the rule is broken) or "unsupported" (valid Sigma we do not evaluate).
        self.status = status

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: rule {self.rule_id or '-'}: {self.message}"


class UnsupportedError(RuleError):
    """Valid Sigma that a compiler stage or backend does not support (backends fail closed)."""

    def __init__(self, message: str, **kwargs: object) -> None:
        kwargs.setdefault("status", "unsupported")
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class InputError(SigmaArrowError):
    """An input (file, topic, table) could not be read at all."""
