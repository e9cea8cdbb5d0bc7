"""pytest plugin for the instrumented runs (tools/sanitize.sh, tools/valgrind.sh):

    PYTHONPATH=tools python -m pytest -p pytest_slow_profile

Loads a Hypothesis profile without deadlines (an instrumented build runs several times slower,
so a deadline measured on a normal build would fail for time, not for a bug), without the
example database (nothing written to .hypothesis/ in the work tree) and without the too_slow
health check.  Tests that set their own @settings keep those values.
"""
from hypothesis import HealthCheck, settings

settings.register_profile("cbackprop-instrumented", deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("cbackprop-instrumented")
