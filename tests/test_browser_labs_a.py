"""Students' path in JupyterLab, in headless Chromium: labs 1, 3, 5, ... (see test_browser_support)."""
from __future__ import annotations

import pytest
from test_browser_support import browser, check_blank, check_finished, lab_server, labs_for_shard, notebook_page  # noqa: F401

pytestmark = pytest.mark.slow
LABS = labs_for_shard(0)


@pytest.mark.parametrize("lab", LABS)
def test_blank_notebook_stops_at_the_first_todo(notebook_page, lab):
    check_blank(notebook_page, lab)


@pytest.mark.parametrize("lab", LABS)
def test_finished_notebook_runs_and_validates(notebook_page, lab):
    check_finished(notebook_page, lab)
