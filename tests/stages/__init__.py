"""Tests of promoe.stages, one file per module."""
