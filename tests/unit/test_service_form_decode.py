"""The token endpoint's urlencoded form decoding, against the standard library's."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from apitoken_service.api.oauth_form import form_decode, parse_form
from apitoken_service.domain.errors import InvalidRequest

pytestmark = pytest.mark.unit

FORM = b"application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "raw",
    [
        b"grant_type=refresh_token&refresh_token=apit_rt_abc-_DEF123",
        b"a=1+2&b=%2B%20%26%3D&c=&d",
        b"name=%C3%A9t%C3%A9&x=%41%42",
        b"&&grant_type=refresh_token&",
        b"k=v=w",
    ],
)
def test_forms_decode_as_parse_qsl_does(raw: bytes) -> None:
    expected = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    assert parse_form(FORM + b"; charset=utf-8", raw) == expected


def test_invalid_utf8_and_repeats_are_invalid_requests() -> None:
    with pytest.raises(InvalidRequest, match="not a valid form"):
        parse_form(FORM, b"refresh_token=%FF%FE")
    with pytest.raises(InvalidRequest, match="repeated"):
        parse_form(FORM, b"grant_type=a&grant%5Ftype=b")
    with pytest.raises(InvalidRequest, match="must be application"):
        parse_form(b"application/json", b"{}")


def test_plus_is_a_space_and_percent_a_byte() -> None:
    assert form_decode(b"a+b%2Bc") == "a b+c"
    assert form_decode(b"plain") == "plain"
