"""Checks for `tk doctor`: each returns ok | warn | fail with a one-line finding and the fix."""
