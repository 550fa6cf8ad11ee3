//! What the tracer keeps of an etcd call: the RPC, and summaries of its request and response.

/// The etcd RPCs summarised here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtcdOp {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    Watch,
    LeaseGrant,
    LeaseRevoke,
    LeaseKeepAlive,
}

impl EtcdOp {
    pub const ALL: [EtcdOp; 9] = [
        EtcdOp::Range,
        EtcdOp::Put,
        EtcdOp::DeleteRange,
        EtcdOp::Txn,
        EtcdOp::Compact,
        EtcdOp::Watch,
        EtcdOp::LeaseGrant,
        EtcdOp::LeaseRevoke,
        EtcdOp::LeaseKeepAlive,
    ];

    /// From the gRPC service and method (`etcdserverpb.KV`, `Range`): the names of
    /// [`EtcdOp::service`] and [`EtcdOp::as_str`], so each is written once.
    pub fn from_rpc(service: &str, method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == method && op.service() == service)
    }

    /// The gRPC service of the method.
    pub fn service(self) -> &'static str {
        match self {
            EtcdOp::Range | EtcdOp::Put | EtcdOp::DeleteRange | EtcdOp::Txn | EtcdOp::Compact => "etcdserverpb.KV",
            EtcdOp::Watch => "etcdserverpb.Watch",
            EtcdOp::LeaseGrant | EtcdOp::LeaseRevoke | EtcdOp::LeaseKeepAlive => "etcdserverpb.Lease",
        }
    }

    /// `db.operation.name`, and the gRPC method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdOp::Range => "Range",
            EtcdOp::Put => "Put",
            EtcdOp::DeleteRange => "DeleteRange",
            EtcdOp::Txn => "Txn",
            EtcdOp::Compact => "Compact",
            EtcdOp::Watch => "Watch",
            EtcdOp::LeaseGrant => "LeaseGrant",
            EtcdOp::LeaseRevoke => "LeaseRevoke",
            EtcdOp::LeaseKeepAlive => "LeaseKeepAlive",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    Create,
    Cancel,
    Progress,
}

impl WatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchKind::Create => "create",
            WatchKind::Cancel => "cancel",
            WatchKind::Progress => "progress",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnSummary {
    pub compares: u32,
    pub success_ops: u32,
    pub failure_ops: u32,
}

/// Summary of a request. Numeric options are `None` when unset (zero) or not captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdRequest {
    pub op: EtcdOp,
    /// The key; for Txn the first compare's key, for Watch the created watcher's key.
    pub key: Option<Vec<u8>>,
    pub range_end: Option<Vec<u8>>,
    pub limit: Option<i64>,
    /// Range revision, Compact revision, Watch start revision.
    pub revision: Option<i64>,
    pub keys_only: bool,
    pub count_only: bool,
    pub serializable: bool,
    pub prev_kv: bool,
    pub lease_id: Option<i64>,
    pub ttl: Option<i64>,
    pub watch_id: Option<i64>,
    pub watch_kind: Option<WatchKind>,
    /// Txn shape; `None` if the message was truncated.
    pub txn: Option<TxnSummary>,
    /// Decoded from a message cut by the capture.
    pub truncated: bool,
}

impl EtcdRequest {
    pub(super) fn new(op: EtcdOp, truncated: bool) -> Self {
        EtcdRequest {
            op,
            key: None,
            range_end: None,
            limit: None,
            revision: None,
            keys_only: false,
            count_only: false,
            serializable: false,
            prev_kv: false,
            lease_id: None,
            ttl: None,
            watch_id: None,
            watch_kind: None,
            txn: None,
            truncated,
        }
    }
}

/// Summary of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdResponse {
    pub op: EtcdOp,
    /// `header.revision`.
    pub revision: Option<i64>,
    pub count: Option<i64>,
    /// Number of kvs returned (only when the message is complete).
    pub kvs: Option<u32>,
    pub more: Option<bool>,
    pub deleted: Option<i64>,
    pub succeeded: Option<bool>,
    pub responses: Option<u32>,
    pub lease_id: Option<i64>,
    pub ttl: Option<i64>,
    pub error: Option<String>,
    pub watch_id: Option<i64>,
    pub created: Option<bool>,
    pub canceled: Option<bool>,
    pub compact_revision: Option<i64>,
    pub cancel_reason: Option<String>,
    pub events: Option<u32>,
    pub truncated: bool,
}

impl EtcdResponse {
    pub(super) fn new(op: EtcdOp, truncated: bool) -> Self {
        EtcdResponse {
            op,
            revision: None,
            count: None,
            kvs: None,
            more: None,
            deleted: None,
            succeeded: None,
            responses: None,
            lease_id: None,
            ttl: None,
            error: None,
            watch_id: None,
            created: None,
            canceled: None,
            compact_revision: None,
            cancel_reason: None,
            events: None,
            truncated,
        }
    }
}
