"""Content negotiation that remembers its answers.

DRF parses the ``Accept`` header and matches it against the renderers on every request. The answer
depends only on the header, the format asked for and the view's renderer classes, so it is kept
per such key (a bounded map: emptied when full, for clients choose the header)."""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation

_MAX_ANSWERS = 1_000
_answers: dict[tuple, tuple[int, str]] = {}


class RememberingContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        key = (request.META.get("HTTP_ACCEPT"), format_suffix,
               request.query_params.get(self.settings.URL_FORMAT_OVERRIDE), tuple(map(type, renderers)))
        answer = _answers.get(key)
        if answer is None:
            # NotAcceptable (406) is raised here every time, never remembered.
            renderer, media_type = super().select_renderer(request, renderers, format_suffix)
            answer = (next(i for i, candidate in enumerate(renderers) if candidate is renderer), media_type)
            if len(_answers) >= _MAX_ANSWERS:
                _answers.clear()
            _answers[key] = answer
        index, media_type = answer
        return renderers[index], media_type


class FormatParameterNegotiation(DefaultContentNegotiation):
    """For the schema's page only: ``?format=json`` or ``?format=yaml`` picks its renderer. The
    partner API has one format, and its ``format`` is an unknown query parameter (400)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return super().select_renderer(request, renderers, format_suffix or request.query_params.get("format"))
