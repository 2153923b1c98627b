"""Tests of promoe.model, one file per module."""
