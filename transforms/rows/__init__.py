"""The row core: *ParseRecords* (raw record -> example, :mod:`transforms.rows.parse`) and
*BuildRows* (examples -> shard rows, :mod:`transforms.rows.builder`), with row assembly
(:mod:`transforms.rows.assembly`) and batch encoding (:mod:`transforms.rows.encoding`).
The task (:mod:`transforms.tasks`) decides what rows an example becomes; truncation is
:mod:`transforms.truncation`; images plug in as :class:`transforms.vision.part.ImagePart`."""
from transforms.rows.assembly import assemble_row, conversation_hash
from transforms.rows.builder import RowBuilder
from transforms.rows.parse import PARSED, REJECTED, ROW, parse_record, parse_records, rejection

__all__ = ["PARSED", "REJECTED", "ROW", "RowBuilder", "assemble_row", "conversation_hash", "parse_record",
           "parse_records", "rejection"]
