"""Tests of promoe; tests/<package>/test_<module>.py holds the tests of promoe/<package>/<module>.py.

Cross-cutting property tests (test_layout, test_safe_loading, test_resume) stay at the top level; builders
used by several files are in a helpers.py beside them, shared fixtures in the nearest conftest.py."""
