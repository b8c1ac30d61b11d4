"""digest claims name their claimant, so a restart can take over a dead process's claim

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('digest_runs') as batch:
        batch.add_column(sa.Column('claimed_by', sa.String(length=64), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('digest_runs') as batch:
        batch.drop_column('claimed_by')
