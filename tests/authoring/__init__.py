"""Tests of formy_async.authoring."""
