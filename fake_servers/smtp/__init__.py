"""The SMTP side of a lab domain: aiosmtpd listeners (MX, submission), the delivery pipeline, the relay queue."""
