"""Tests of promoe.rows, one file per module."""



