"""Tests of promoe.analysis, one file per module."""
