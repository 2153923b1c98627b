"""Tests of promoe.data, one file per module."""
