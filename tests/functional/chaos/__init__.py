"""The chaos test's parts: a private broker, guest churn, faults, and a pure history checker."""
