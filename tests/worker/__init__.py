"""Tests of formy_async.worker."""
