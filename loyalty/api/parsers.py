"""The API's JSON parser: DRF's, refusing what JSON carries but the platform cannot keep.

* A number beyond a double's range (``1e400``) is read by Python as infinity, which PostgreSQL's
  JSON refuses (a 500 when it was stored, and a batch's orjson wrote it as null): refused here.
* A body nested thousands of levels deep makes the decoder raise ``RecursionError``, which DRF
  does not turn into a parse error (a 500): refused here too.

Both are ``400 invalid_json``, as any body that is not JSON.
"""

from __future__ import annotations

import codecs
import json
import math

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils.json import strict_constant


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return json.load(codecs.getreader(encoding)(stream), parse_constant=strict_constant, parse_float=_finite)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply") from exc
