//! Attribute numbers of `linux/netfilter/nf_tables.h` that the encoder and the readers use,
//! by message (`NFTA_<MESSAGE>_<ATTRIBUTE>`). Attribute 1 of every message names its table.

pub(crate) mod table {
    pub(crate) const NAME: u16 = 1;
    pub(crate) const FLAGS: u16 = 2;
}

pub(crate) mod chain {
    pub(crate) const NAME: u16 = 3;
    pub(crate) const HOOK: u16 = 4;
    pub(crate) const POLICY: u16 = 5;
    pub(crate) const TYPE: u16 = 7;
    pub(crate) const HOOK_HOOKNUM: u16 = 1;
    pub(crate) const HOOK_PRIORITY: u16 = 2;
}

pub(crate) mod rule {
    pub(crate) const CHAIN: u16 = 2;
    pub(crate) const EXPRESSIONS: u16 = 4;
    pub(crate) const EXPR_NAME: u16 = 1;
    pub(crate) const EXPR_DATA: u16 = 2;
}

pub(crate) mod set {
    pub(crate) const NAME: u16 = 2;
    pub(crate) const FLAGS: u16 = 3;
    pub(crate) const KEY_TYPE: u16 = 4;
    pub(crate) const KEY_LEN: u16 = 5;
    pub(crate) const DESC: u16 = 9;
    pub(crate) const ID: u16 = 10;
    pub(crate) const USERDATA: u16 = 13;
    pub(crate) const DESC_SIZE: u16 = 1;
    pub(crate) const DESC_CONCAT: u16 = 2;
    pub(crate) const FIELD_LEN: u16 = 1;
    pub(crate) const F_ANONYMOUS: u32 = 0x1;
    pub(crate) const F_CONSTANT: u32 = 0x2;
    pub(crate) const F_INTERVAL: u32 = 0x4;
    pub(crate) const F_TIMEOUT: u32 = 0x10;
    pub(crate) const F_CONCAT: u32 = 0x80;
}

pub(crate) mod elem {
    pub(crate) const LIST_TABLE: u16 = 1;
    pub(crate) const LIST_SET: u16 = 2;
    pub(crate) const LIST_ELEMENTS: u16 = 3;
    pub(crate) const LIST_SET_ID: u16 = 4;
    pub(crate) const KEY: u16 = 1;
    pub(crate) const FLAGS: u16 = 3;
    pub(crate) const TIMEOUT: u16 = 4;
    pub(crate) const USERDATA: u16 = 6;
    pub(crate) const KEY_END: u16 = 10;
    pub(crate) const F_INTERVAL_END: u32 = 0x1;
}

pub(crate) mod obj {
    pub(crate) const TABLE: u16 = 1;
    pub(crate) const NAME: u16 = 2;
    pub(crate) const TYPE: u16 = 3;
    pub(crate) const DATA: u16 = 4;
    pub(crate) const TYPE_COUNTER: u32 = 1;
    pub(crate) const COUNTER_BYTES: u16 = 1;
    pub(crate) const COUNTER_PACKETS: u16 = 2;
}

/// Expression attributes, per expression.
pub(crate) mod expr {
    pub(crate) const META_DREG: u16 = 1;
    pub(crate) const META_KEY: u16 = 2;
    pub(crate) const CMP_SREG: u16 = 1;
    pub(crate) const CMP_OP: u16 = 2;
    pub(crate) const CMP_DATA: u16 = 3;
    pub(crate) const PAYLOAD_DREG: u16 = 1;
    pub(crate) const PAYLOAD_BASE: u16 = 2;
    pub(crate) const PAYLOAD_OFFSET: u16 = 3;
    pub(crate) const PAYLOAD_LEN: u16 = 4;
    pub(crate) const BITWISE_SREG: u16 = 1;
    pub(crate) const BITWISE_DREG: u16 = 2;
    pub(crate) const BITWISE_LEN: u16 = 3;
    pub(crate) const BITWISE_MASK: u16 = 4;
    pub(crate) const BITWISE_XOR: u16 = 5;
    pub(crate) const BYTEORDER_SREG: u16 = 1;
    pub(crate) const BYTEORDER_DREG: u16 = 2;
    pub(crate) const BYTEORDER_OP: u16 = 3;
    pub(crate) const BYTEORDER_LEN: u16 = 4;
    pub(crate) const BYTEORDER_SIZE: u16 = 5;
    pub(crate) const CT_DREG: u16 = 1;
    pub(crate) const CT_KEY: u16 = 2;
    pub(crate) const LOOKUP_SET: u16 = 1;
    pub(crate) const LOOKUP_SREG: u16 = 2;
    pub(crate) const LOOKUP_SET_ID: u16 = 4;
    pub(crate) const OBJREF_IMM_TYPE: u16 = 1;
    pub(crate) const OBJREF_IMM_NAME: u16 = 2;
    pub(crate) const LOG_GROUP: u16 = 1;
    pub(crate) const LOG_PREFIX: u16 = 2;
    pub(crate) const REJECT_TYPE: u16 = 1;
    pub(crate) const REJECT_ICMP_CODE: u16 = 2;
    pub(crate) const IMMEDIATE_DREG: u16 = 1;
    pub(crate) const IMMEDIATE_DATA: u16 = 2;
    pub(crate) const VERDICT_CODE: u16 = 1;
    pub(crate) const VERDICT_CHAIN: u16 = 2;
    pub(crate) const REDIR_REG_PROTO_MIN: u16 = 1;
    pub(crate) const REDIR_FLAGS: u16 = 3;
}
