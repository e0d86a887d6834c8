"""Tests of formy_async.store."""
