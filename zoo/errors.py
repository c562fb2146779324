"""Errors zoo reports to users: one line that names the file, the place and the layer."""

from __future__ import annotations


class ZooError(Exception):
    """Base of every error zoo reports to the user without a traceback."""

    exit_code = 1


class SpecError(ZooError):
    """A spec (or a weights file named by one) is invalid. Exit status 2.

    The message reads ``FILE:LINE: layer 'NAME' (TYPE): what is wrong``; parts that do not
    apply are left out. For JSON specs the place is a JSON path (``$.layer[3].type``).
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 path: str | None = None, layer: str | None = None, layer_type: str | None = None):
        self.message, self.file, self.line, self.path = message, file, line, path
        self.layer, self.layer_type = layer, layer_type
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f": {self.path}"
        who = ""
        if self.layer is not None:
            who = f"layer '{self.layer}'" + (f" ({self.layer_type})" if self.layer_type else "") + ": "
        return f"{where}: {who}{self.message}"


class UsageError(ZooError):
    """A command-line option or API argument that makes no sense (e.g. ``--atol -1``). Exit 2."""

    exit_code = 2


class EngineUnavailable(ZooError):
    """An engine (or a device of it) is not installed or not present."""


class Unsupported(ZooError):
    """The engine cannot express this layer type or option (reported as `unsupported`, not a
    failure)."""


class ManifestError(ZooError):
    """A build folder is not a finished zoo build, or its files do not match its manifest."""


class ImportRefused(ZooError):
    """`zoo import` refuses a model file (unsupported ops, unsafe content). Exit status 2."""

    exit_code = 2
