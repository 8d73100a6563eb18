"""The baseline: the seed's own design, implemented faithfully.

A SQLite database with the seed's ``generations`` table and a ``profiles`` table, through the
SQLAlchemy ORM exactly as the seed's history module uses it: one session per request, one
``add`` + ``commit`` per generation, and the seed's queries (the join for ``profile_name``,
``LIKE '%search%'``, ``count()``, ``order_by(created_at desc)``, ``offset``/``limit``; stats
with ``count``, ``sum(duration)`` and a group by profile). SQLite's defaults are kept (rollback
journal, ``synchronous=FULL``), as the seed leaves them. No index beyond the primary keys: the
seed declares none.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    func,
)
from sqlalchemy.orm import Session, declarative_base, sessionmaker

Base = declarative_base()


class DBVoiceProfile(Base):
    __tablename__ = "profiles"

    id = Column(String, primary_key=True, default=lambda: str(uuid.uuid4()))
    name = Column(String, nullable=False)
    description = Column(Text)
    language = Column(String, default="en")
    created_at = Column(DateTime, default=datetime.utcnow)
    updated_at = Column(DateTime, default=datetime.utcnow)


class DBGeneration(Base):  # the seed's Generation table, column for column
    __tablename__ = "generations"

    id = Column(String, primary_key=True, default=lambda: str(uuid.uuid4()))
    profile_id = Column(String, ForeignKey("profiles.id"), nullable=False)
    text = Column(Text, nullable=False)
    language = Column(String, default="en")
    audio_path = Column(String, nullable=True)
    duration = Column(Float, nullable=True)
    seed = Column(Integer)
    instruct = Column(Text)
    engine = Column(String, default="qwen")
    model_size = Column(String, nullable=True)
    status = Column(String, default="completed")  # pending | completed | failed
    error = Column(Text, nullable=True)
    is_favorited = Column(Boolean, default=False)
    created_at = Column(DateTime, default=datetime.utcnow)


# The folder named in the audio_path of rows the host-side cost measurement inserts: they are
# deleted afterwards, and by the next run if this one dies first.
MEASURED_AUDIO = "bench-measured-audio"

_FIELDS = (
    "id", "profile_id", "text", "language", "audio_path", "duration", "seed", "instruct",
    "engine", "model_size", "status", "error", "is_favorited", "created_at",
)


class Baseline:
    """One baseline database: the seed's engine and session factory over a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # as a FastAPI app sets SQLite up: one pooled engine, a session per request
        self.engine = create_engine(
            f"sqlite:///{self.path}", connect_args={"check_same_thread": False}
        )
        self.SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=self.engine)

    def create(self) -> None:
        Base.metadata.create_all(bind=self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- setup (not measured): bulk loads with executemany, one transaction ------------------

    def bulk_load_profiles(self, profiles: Iterable[dict[str, Any]]) -> None:
        rows = [
            {
                "id": p["id"],
                "name": p["name"],
                "description": p["description"],
                "language": p["language"],
                "created_at": _naive(p["created_at"]),
                "updated_at": _naive(p["updated_at"]),
            }
            for p in profiles
        ]
        with self.engine.begin() as con:
            con.execute(DBVoiceProfile.__table__.insert(), rows)

    def bulk_load(self, rows: Iterable[dict[str, Any]], batch: int = 20_000) -> int:
        count = 0
        with self.engine.begin() as con:
            chunk: list[dict[str, Any]] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) >= batch:
                    con.execute(DBGeneration.__table__.insert(), chunk)
                    count += len(chunk)
                    chunk = []
            if chunk:
                con.execute(DBGeneration.__table__.insert(), chunk)
                count += len(chunk)
        return count

    # -- the seed's functions ----------------------------------------------------------------

    def create_generation(
        self,
        profile_id: str,
        text: str,
        language: str,
        audio_path: str,
        duration: float,
        seed: int | None,
        instruct: str | None = None,
        generation_id: str | None = None,
    ) -> None:
        """The seed's ``create_generation``: add the row, commit (one commit per generation)."""
        db: Session = self.SessionLocal()
        try:
            db_generation = DBGeneration(
                id=generation_id or str(uuid.uuid4()),
                profile_id=profile_id,
                text=text,
                language=language,
                audio_path=audio_path,
                duration=duration,
                seed=seed,
                instruct=instruct,
                created_at=datetime.utcnow(),
            )
            db.add(db_generation)
            db.commit()
        finally:
            db.close()

    def delete_measured(self) -> int:
        """Remove the rows that the host-side cost measurement inserts (see MEASURED_AUDIO)."""
        with self.engine.begin() as con:
            return con.execute(
                DBGeneration.__table__.delete().where(DBGeneration.audio_path.like(f"%/{MEASURED_AUDIO}/%"))
            ).rowcount

    def delete_ids(self, ids: list[str]) -> None:
        with self.SessionLocal() as db:
            db.query(DBGeneration).filter(DBGeneration.id.in_(ids)).delete(synchronize_session=False)
            db.commit()

    def list_generations(
        self, *, profile_id: str | None = None, search: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        """The seed's ``list_generations``, query for query."""
        with self.SessionLocal() as db:
            q = db.query(DBGeneration, DBVoiceProfile.name.label("profile_name")).join(
                DBVoiceProfile, DBGeneration.profile_id == DBVoiceProfile.id
            )
            if profile_id:
                q = q.filter(DBGeneration.profile_id == profile_id)
            if search:
                q = q.filter(DBGeneration.text.like(f"%{search}%"))
            total = q.count()
            q = q.order_by(DBGeneration.created_at.desc())
            q = q.offset(offset).limit(limit)
            items = [_response(gen, profile_name) for gen, profile_name in q.all()]
            return {"items": items, "total": total}

    def get_generation(self, generation_id: str) -> dict[str, Any] | None:
        """``GET /history/{id}``: the generation and its profile's name."""
        with self.SessionLocal() as db:
            row = (
                db.query(DBGeneration, DBVoiceProfile.name.label("profile_name"))
                .join(DBVoiceProfile, DBGeneration.profile_id == DBVoiceProfile.id)
                .filter(DBGeneration.id == generation_id)
                .first()
            )
            return None if row is None else _response(*row)

    def get_generation_stats(self) -> dict[str, Any]:
        """The seed's ``get_generation_stats``."""
        with self.SessionLocal() as db:
            total = db.query(func.count(DBGeneration.id)).scalar()
            total_duration = db.query(func.sum(DBGeneration.duration)).scalar()
            by_profile = (
                db.query(DBGeneration.profile_id, func.count(DBGeneration.id).label("count"))
                .group_by(DBGeneration.profile_id)
                .all()
            )
            return {
                "total_generations": total,
                "total_duration_seconds": total_duration,
                "generations_by_profile": {profile_id: count for profile_id, count in by_profile},
            }


def _response(gen: DBGeneration, profile_name: str) -> dict[str, Any]:
    """The seed's GenerationResponse, as a dict."""
    return {
        "id": gen.id,
        "profile_id": gen.profile_id,
        "profile_name": profile_name,
        "text": gen.text,
        "language": gen.language,
        "audio_path": gen.audio_path,
        "duration": gen.duration,
        "seed": gen.seed,
        "instruct": gen.instruct,
        "engine": gen.engine,
        "model_size": gen.model_size,
        "status": gen.status,
        "error": gen.error,
        "is_favorited": gen.is_favorited,
        "created_at": gen.created_at.isoformat() + "Z" if gen.created_at else None,
    }


def _naive(value: datetime) -> datetime:
    """The seed stores naive UTC datetimes (``datetime.utcnow``)."""
    return value.replace(tzinfo=None) if value.tzinfo else value


def row_of(record: dict[str, Any], library_root: Path) -> dict[str, Any]:
    """The baseline row of one generation record: the same data, with the seed's absolute
    audio path and naive UTC time."""
    row = {name: record[name] for name in _FIELDS}
    row["created_at"] = _naive(record["created_at"])
    if record["audio_path"] is not None:
        row["audio_path"] = str(library_root.joinpath(*record["audio_path"].split("/")))
    return row
