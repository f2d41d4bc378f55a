# phantom cohort synthesis (demo/tests)
