"""device routing: the device class a job asks for, and how many devices a worker can give

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:50:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('jobs', sa.Column('device_class', sa.String(length=200), nullable=True))
    op.add_column(
        'workers',
        sa.Column('max_devices', sa.Integer(), nullable=False, server_default='1'),
    )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('workers') as batch:
        batch.drop_column('max_devices')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('device_class')
