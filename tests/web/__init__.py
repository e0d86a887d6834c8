"""Tests of formy_async.web."""
