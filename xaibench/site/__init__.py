"""A static HTML leaderboard site for nightly jobs: overview, per-manifest pages with sortable
tables, study boards, curves, saliency grids and run history. Opens offline; no server.

``write_site`` builds it (``xaibench site RESULTS --out DIR``); ``record_history`` appends a
run's summary to its manifest folder's history (called at the end of ``xaibench run``).
"""

from xaibench.site.build import write_site
from xaibench.site.history import record_history

__all__ = ["record_history", "write_site"]
