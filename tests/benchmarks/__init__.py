"""Tests of promoe.benchmarks, one file per module."""



