"""One pytest item per conformance check, against the server given on the
command line (see ``conformance.pytest_plugin``)::

    pytest -p conformance.pytest_plugin --pyargs conformance.test_server \
        --conformance-whip 'http://host/whip/{stream}' --conformance-whep 'http://host/whep/{stream}'
"""

from __future__ import annotations

from conformance.pytest_plugin import assert_conformant
from conformance.runner import Check, Report


def test_check(conformance_check: Check, conformance_report: Report) -> None:
    assert_conformant(conformance_report.result(conformance_check.id))
