/*
 * shardline_fence: Shardline's range-ownership fence in C (docs/fencing.md).
 *
 * Same contract as the PL/pgSQL fence (migrations/shard/0003): before a write of
 * shard_key k, take the SHARED transaction-level advisory lock
 * (1397245510, k >> 22) -- the very lock pg_advisory_xact_lock_shared(int4, int4)
 * takes --, then read the state of the owned range holding k as last committed:
 * no range raises SLF01, a range not 'active' raises SLF02.
 *
 * Why reading the latest committed state after the lock is enough, at every
 * isolation level: every change to owned_ranges takes the EXCLUSIVE locks of the
 * buckets it touches (owned_ranges_lock trigger) and holds them until it commits.
 * PostgreSQL marks a transaction committed in the proc array before it releases its
 * locks, so once our LockAcquire returns, a snapshot taken now sees every change of
 * our bucket that committed before, and no change of it can commit until we end.
 * The scan uses GetLatestSnapshot(), not the transaction snapshot: a REPEATABLE
 * READ transaction whose snapshot predates a freeze is rejected (SLF02).
 *
 * Per-transaction cache: the last key that passed, valid while the lock is held
 * (until the transaction ends, or until a subtransaction that may have taken it
 * aborts: an aborted savepoint releases the locks it acquired).
 *
 * No SPI, no PL/pgSQL frame: one lock and a heap scan of the (tiny) owned_ranges.
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

PG_MODULE_MAGIC;

/* shardline_core::fence::FENCE_LOCK_CLASS, FENCE_BUCKET_SHIFT */
#define FENCE_LOCK_CLASS 1397245510
#define FENCE_BUCKET_SHIFT 22

#define ERRCODE_SHARDLINE_NOT_OWNED MAKE_SQLSTATE('S', 'L', 'F', '0', '1')
#define ERRCODE_SHARDLINE_RANGE_FROZEN MAKE_SQLSTATE('S', 'L', 'F', '0', '2')

/* owned_ranges columns (looked up by name, checked against their types) */
typedef struct RangeCols
{
	AttrNumber	id;
	AttrNumber	start_key;
	AttrNumber	end_key;
	AttrNumber	state;
} RangeCols;

/* per-backend state */
static bool cache_valid = false;	/* cached_key passed in this transaction */
static int64 cached_key = 0;
static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
static Oid	ranges_relid = InvalidOid;
static RangeCols ranges_cols;

/* attnum of shard_key per data table (a handful of relations) */
#define KEY_CACHE_SIZE 16
static Oid	key_cache_relid[KEY_CACHE_SIZE];
static AttrNumber key_cache_attnum[KEY_CACHE_SIZE];
static int	key_cache_next = 0;

static bool callbacks_registered = false;

static void
fence_xact_callback(XactEvent event, void *arg)
{
	/* any end of the top-level transaction releases the lock */
	cache_valid = false;
}

static void
fence_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	/*
	 * An aborted subtransaction releases the locks it acquired; we do not track
	 * which one took ours, so forget the verdict on any subtransaction abort.
	 */
	if (event == SUBXACT_EVENT_ABORT_SUB)
		cache_valid = false;
}

static void
register_callbacks(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(fence_xact_callback, NULL);
		RegisterSubXactCallback(fence_subxact_callback, NULL);
		callbacks_registered = true;
	}
}

static AttrNumber
column(TupleDesc desc, const char *name, Oid type)
{
	int			attnum = SPI_fnumber(desc, name);

	if (attnum <= 0 || TupleDescAttr(desc, attnum - 1)->atttypid != type)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("shardline_fence: owned_ranges has no column %s of type %s",
						name, format_type_be(type))));
	return (AttrNumber) attnum;
}

/*
 * Open owned_ranges (found by name on the search path once per backend; the
 * cached OID is re-checked by name on every open, so a re-created table is found
 * again).
 */
static Relation
open_owned_ranges(void)
{
	Relation	rel = NULL;

	if (OidIsValid(ranges_relid))
	{
		rel = try_table_open(ranges_relid, AccessShareLock);
		if (rel != NULL && strcmp(RelationGetRelationName(rel), "owned_ranges") != 0)
		{
			table_close(rel, AccessShareLock);
			rel = NULL;
		}
	}
	if (rel == NULL)
	{
		Oid			relid = RelnameGetRelid("owned_ranges");
		TupleDesc	desc;

		if (!OidIsValid(relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("shardline_fence: relation owned_ranges not found on the search path")));
		rel = table_open(relid, AccessShareLock);
		desc = RelationGetDescr(rel);
		ranges_cols.id = column(desc, "id", INT8OID);
		ranges_cols.start_key = column(desc, "start_key", INT8OID);
		ranges_cols.end_key = column(desc, "end_key", INT8OID);
		ranges_cols.state = column(desc, "state", TEXTOID);
		ranges_relid = relid;
	}
	return rel;
}

static bool
text_is(Datum d, const char *s, int len)
{
	text	   *t = DatumGetTextPP(d);
	bool		eq = VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), s, len) == 0;

	if ((Pointer) t != DatumGetPointer(d))
		pfree(t);
	return eq;
}

static void
fence_check(int64 k)
{
	LOCKTAG		tag;
	Relation	rel;
	Snapshot	snap;
	TableScanDesc scan;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		found = false;
	bool		active = false;
	int64		rid = 0,
				rstart = 0,
				rend = 0;
	char	   *rstate = NULL;

	if (cache_valid && cached_key == k && cached_lxid == MyProc->lxid)
		return;
	register_callbacks();

	/* == pg_advisory_xact_lock_shared(1397245510, (k >> 22)::int4) */
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) FENCE_LOCK_CLASS,
						 (uint32) (int32) (k >> FENCE_BUCKET_SHIFT), 2);
	(void) LockAcquire(&tag, ShareLock, false, false);

	/* the state as last committed, read after the lock */
	rel = open_owned_ranges();
	desc = RelationGetDescr(rel);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		int64		s,
					e;

		s = DatumGetInt64(heap_getattr(tup, ranges_cols.start_key, desc, &isnull));
		if (isnull || s > k)
			continue;
		e = DatumGetInt64(heap_getattr(tup, ranges_cols.end_key, desc, &isnull));
		if (isnull || e <= k)
			continue;
		/* the exclusion constraint allows one range per key */
		found = true;
		{
			Datum		st = heap_getattr(tup, ranges_cols.state, desc, &isnull);

			active = !isnull && text_is(st, "active", 6);
			if (!active)
			{
				rid = DatumGetInt64(heap_getattr(tup, ranges_cols.id, desc, &isnull));
				rstart = s;
				rend = e;
				rstate = isnull ? pstrdup("<NULL>") : TextDatumGetCString(st);
			}
		}
		break;
	}
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);

	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_SHARDLINE_NOT_OWNED),
				 errmsg("shard_key " INT64_FORMAT " is not in a range owned by this shard", k),
				 errhint("refresh the range map and retry on the owner")));
	if (!active)
		ereport(ERROR,
				(errcode(ERRCODE_SHARDLINE_RANGE_FROZEN),
				 errmsg("range " INT64_FORMAT " [" INT64_FORMAT ", " INT64_FORMAT ") holding shard_key " INT64_FORMAT " is %s",
						rid, rstart, rend, k, rstate),
				 errhint("the range is moving: retry after the map changes")));

	/* safe until the transaction ends: we hold the shared bucket lock */
	cached_key = k;
	cached_lxid = MyProc->lxid;
	cache_valid = true;
}

static AttrNumber
shard_key_attnum(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	int			attnum;
	int			i;

	for (i = 0; i < KEY_CACHE_SIZE; i++)
	{
		if (key_cache_relid[i] == relid)
		{
			AttrNumber	a = key_cache_attnum[i];
			Form_pg_attribute att;

			/* re-checked: a dropped and re-added column moves */
			if (a <= desc->natts)
			{
				att = TupleDescAttr(desc, a - 1);
				if (!att->attisdropped && att->atttypid == INT8OID &&
					strcmp(NameStr(att->attname), "shard_key") == 0)
					return a;
			}
			break;
		}
	}
	attnum = SPI_fnumber(desc, "shard_key");
	if (attnum <= 0 || TupleDescAttr(desc, attnum - 1)->atttypid != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("shardline_fence: table %s has no bigint column shard_key",
						RelationGetRelationName(rel))));
	key_cache_relid[key_cache_next] = relid;
	key_cache_attnum[key_cache_next] = (AttrNumber) attnum;
	key_cache_next = (key_cache_next + 1) % KEY_CACHE_SIZE;
	return (AttrNumber) attnum;
}

PG_FUNCTION_INFO_V1(shardline_fence_native_insert);

/* BEFORE INSERT ... FOR EACH ROW: fence NEW.shard_key, return NEW unchanged. */
Datum
shardline_fence_native_insert(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	tup;
	Datum		d;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("shardline_fence_native_insert: not called as a trigger")));
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("shardline_fence_native_insert: must be a BEFORE INSERT ... FOR EACH ROW trigger")));

	tup = td->tg_trigtuple;
	d = heap_getattr(tup, shard_key_attnum(td->tg_relation),
					 RelationGetDescr(td->tg_relation), &isnull);
	if (isnull)
		/* as the PL/pgSQL fence: a NULL key is in no range */
		ereport(ERROR,
				(errcode(ERRCODE_SHARDLINE_NOT_OWNED),
				 errmsg("shard_key <NULL> is not in a range owned by this shard"),
				 errhint("refresh the range map and retry on the owner")));
	fence_check(DatumGetInt64(d));
	return PointerGetDatum(tup);
}

PG_FUNCTION_INFO_V1(shardline_fence_native_check);

/* shardline_fence_native_check(k bigint) RETURNS boolean: true or SLF01/SLF02. */
Datum
shardline_fence_native_check(PG_FUNCTION_ARGS)
{
	fence_check(PG_GETARG_INT64(0));
	PG_RETURN_BOOL(true);
}
