"""Model back-ends behind one small interface (see ``base.Backend``)."""
