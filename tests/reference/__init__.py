"""Third-party reference implementations that the tests compare tlbench's own code against."""
