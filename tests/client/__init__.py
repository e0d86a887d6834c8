"""Tests of formy_async.client."""
