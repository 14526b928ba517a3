//! One run of one job: steps in order through every pattern.
