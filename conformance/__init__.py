"""A black-box WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep-03) conformance suite.

Point it at any server::

    python -m conformance --whip 'https://host/whip/{stream}' --whep 'https://host/whep/{stream}'

or use it from Python (``await run_suite(Config(whip=..., whep=...))``) or
pytest (``pytest -p conformance.pytest_plugin --pyargs conformance.test_server
--conformance-whip ... --conformance-whep ...``).  Every check names the
spec section it tests and the level of the requirement (MUST/SHOULD/MAY);
a run fails only on MUST failures.

Layout: ``runner`` (registry, results, the loop), ``context`` (target,
HTTP, cleanup), ``offers`` (the SDP the suite sends), ``checks/`` (the
checks, by protocol; ``checks/rules/`` holds the rules WHIP and WHEP share,
written once and registered for each by ``checks/protocol``), ``report``
(table, JSON, Markdown).
"""

from .context import Config
from .runner import Check, Level, Report, Result, Status, all_checks, run_suite

__all__ = ["Check", "Config", "Level", "Report", "Result", "Status", "all_checks", "run_suite"]
