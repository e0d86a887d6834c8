"""Tests of formy_async.comfy."""
