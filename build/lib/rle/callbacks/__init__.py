"""Lightning callbacks: the step axis, telemetry and training dynamics logged on it."""
