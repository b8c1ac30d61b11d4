"""drop ix_messages_sender: no query needs it, and every stored message paid for it

Every read of messages by sender is scoped to one chat (forget, the opt-out filter of a window), so
ix_messages_chat_sent serves it. Users are never deleted, so the ON DELETE SET NULL of sender_id
needs no index either. Keeping it cost about a fifth of a bulk import's insert time.

Revision ID: 0004
Revises: 0003
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain DROP INDEX, not a batch (table-copying) operation: an existing table of millions of rows
    # must not be rebuilt for it.
    op.drop_index('ix_messages_sender', table_name='messages')


def downgrade() -> None:
    op.create_index('ix_messages_sender', 'messages', ['sender_id'], unique=False)
