"""What providers tell us after a send: SNS envelopes (:mod:`.envelope`), SES events
(:mod:`.ses_events`), and how they change messages and suppressions (:mod:`.store`)."""
