"""What operators see: metrics, the event feed, pass reports and the telemetry that feeds them."""
