"""Paths shared by the tests: the repository root, tests/ and its fixtures."""

import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / 'fixtures'
HELPERS = TESTS / 'helpers'
CONFIGS = REPO / 'configs'
