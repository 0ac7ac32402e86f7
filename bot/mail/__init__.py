"""Email as a channel, on the desk's side: threading an inbound mail onto its ticket inside the
dispatcher's transaction (:mod:`bot.mail.threads`), and what the email adapter reads and keeps
in the database (:mod:`bot.mail.store`: how far the mailbox was read, the headers a reply
continues)."""
