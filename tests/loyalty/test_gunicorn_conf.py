"""gunicorn's worker start-up (loyalty/gunicorn_conf.py): every view is imported before the first
request, and what start-up loaded is frozen out of the garbage collector's sight."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter, set up as the WSGI module sets Django up, with nothing imported by a request.
SCRIPT = """
import gc, sys
import loyalty.wsgi
before = ("loyalty.urls" in sys.modules, "ledger.api" in sys.modules, gc.get_freeze_count())
from loyalty import gunicorn_conf
gunicorn_conf.post_worker_init(None)
after = ("loyalty.urls" in sys.modules, "ledger.api" in sys.modules, gc.get_freeze_count())
print(before, after)
"""


def test_post_worker_init_imports_the_urlconf_then_freezes():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "loyalty.settings", "DEBUG": "1"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.strip().splitlines()[-1].split(") (")
    assert before == "(False, False, 0"
    urls, views, frozen = after.rstrip(")").split(", ")
    assert (urls, views) == ("True", "True")
    assert int(frozen) > 0
