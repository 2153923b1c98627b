"""Tests of promoe; tests/<package>/test_<module>.py holds the tests of promoe/<package>/<module>.py."""
