"""The one RFC 6749 form parser of the token, revocation and introspection endpoints."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from apitoken_service.domain.errors import InvalidRequest

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
_FORM = FORM_MEDIA_TYPE.encode()
# Parameter names of RFC 6749, 7009 and 7662: refused when repeated (and quoted, being of a
# known shape); any other name could be anything the client sent and is ignored.
_KNOWN_PARAMETERS = frozenset(
    {"grant_type", "refresh_token", "client_id", "client_secret", "scope", "token",
     "token_type_hint"}
)  # fmt: skip


def parse_form(content_type: bytes, body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as a dict; a repeated parameter is refused
    (RFC 6749 section 3.2: parameters must not be included more than once)."""
    if content_type.split(b";", 1)[0].strip().lower() != _FORM:
        raise InvalidRequest(f"the body must be {FORM_MEDIA_TYPE}")
    form: dict[str, str] = {}
    try:
        for field in body.split(b"&"):
            if not field:
                continue
            raw_key, _, raw_value = field.partition(b"=")
            key = form_decode(raw_key)
            value = form_decode(raw_value)
            if key in form:
                if key in _KNOWN_PARAMETERS:
                    raise InvalidRequest(f"parameter {key!r} is repeated")
                continue  # an unknown parameter is ignored (RFC 6749 section 3.2), repeated too
            form[key] = value
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not a valid form") from None
    return form


def form_decode(raw: bytes) -> str:
    """One name or value of a urlencoded form (WHATWG URL standard): `+` is a space, `%XX` a
    byte, and the bytes are UTF-8. parse_qsl does the same for a whole query, at several times
    the cost of this for the two or three fields a grant has; unlike it, invalid UTF-8 raises
    instead of being replaced."""
    if b"%" in raw or b"+" in raw:
        raw = unquote_to_bytes(raw.replace(b"+", b" "))
    return raw.decode("utf-8")
