"""The registry's errors: one class per answer a caller can act on, each with the HTTP status
and the short code the service sends, so the embedded Registry and the HTTP client raise the
same exception for the same mistake."""

from __future__ import annotations


class RegistryError(Exception):
    """A request the registry refused or could not complete; ``str()`` says why."""

    status = 500
    code = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def as_json(self) -> dict:
        return {"error": self.message, "code": self.code}


class BadRequest(RegistryError):
    """Malformed input: a bad persona id, a body that is not JSON, an unknown input kind."""

    status, code = 400, "bad_request"


class Forbidden(RegistryError):
    """A signed asset URL whose signature does not match or that has expired."""

    status, code = 403, "forbidden"


class NotFound(RegistryError):
    """An unknown persona, version, job or asset."""

    status, code = 404, "not_found"


class AlreadyExists(RegistryError):
    status, code = 409, "exists"


class TooLarge(RegistryError):
    """An upload over the configured caps (per file or in total)."""

    status, code = 413, "too_large"


class QueueFull(RegistryError):
    """Every build worker is busy and the job queue is at its bound: try again later."""

    status, code = 503, "queue_full"


class Unavailable(RegistryError):
    """The registry service could not be reached (refused, timed out)."""

    status, code = 503, "unavailable"


class ConfigError(RegistryError):
    """A ``[registry]`` setting that cannot work (an unknown object store scheme, a bad URL)."""

    code = "config"


class Corrupt(RegistryError):
    """Stored data that no longer validates (a pack row, a blob): the registry's fault, not the caller's."""

    status, code = 500, "corrupt"


BY_CODE = {cls.code: cls for cls in (BadRequest, Forbidden, NotFound, AlreadyExists, TooLarge, QueueFull,
                                     Unavailable, ConfigError, Corrupt)}
BY_STATUS = {cls.status: cls for cls in (BadRequest, Forbidden, NotFound, AlreadyExists, TooLarge, QueueFull)}


def error_for(status: int, message: str, code: str = "") -> RegistryError:
    """The exception a client raises for a service answer: by the service's error code, else
    (an answer from something in front of the service, a proxy) by the HTTP status."""
    return BY_CODE.get(code, BY_STATUS.get(status, RegistryError))(message)
