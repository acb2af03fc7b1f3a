"""What a recipient's outcome is called in Chinese: the one table the dashboard's pages and the
results file (hub.messages.results) both read, so a page and its download never disagree.

A message's `status` is the hub's (accepted … delivered, failed, expired …); `error` is what
the gateway or the hub said (a carrier's code such as `isv.MOBILE_NUMBER_ILLEGAL`, `UNDELIV`,
`too_long`, "outcome unknown: …"). The codes stay in the API; people read these words.
"""

from __future__ import annotations

STATUS_WORDS = {
    "accepted": "待发送",
    "sending": "发送中",
    "sent": "已发出",
    "delivered": "已送达",
    "undelivered": "未送达",
    "failed": "失败",
    "deduplicated": "已去重",
    "rejected": "号码无效",
    "opted_out": "已退订",
    "cancelled": "已取消",
    "expired": "已过期",
}

# Why a number given in a send was not used at all (the send's `rejected` list).
REJECT_WORDS = {
    "malformed": "号码格式错误",
    "invalid": "号码无效",
    "not_mainland": "非大陆号码",
    "not_mobile": "非手机号码",
    "unknown_contact": "联系人不存在",
    "missing_value": "名册中缺少内容所需的变量（如姓名）",
    "unfit_value": "名册中的变量含【】或控制字符",
    "too_long": "填入变量后内容过长",
}

# Why a message did not (or may not) arrive, by status.
_BY_STATUS = {
    "failed": "运营商拒收",
    "undelivered": "未送达",
    "expired": "有效期内未发出",
    "deduplicated": "已去重（已收到相同内容）",
    "opted_out": "已退订",
    "cancelled": "已取消发送",
    "rejected": "号码无效",
}

# A failure's error code, more precisely (matched case-insensitively, anywhere in the error).
_BY_ERROR = (
    ("mobile_number_illegal", "号码无效"),
    ("number_not_supported", "号码无效"),
    ("invalid", "号码无效"),
    ("too_long", "内容过长"),
    ("no_signature", "签名未报备"),
    ("black", "号码在运营商黑名单"),
    ("business_limit_control", "运营商限制发送频率"),
)

UNKNOWN_OUTCOME = "结果未知（可能已发出）"


def status_word(status: str) -> str:
    return STATUS_WORDS.get(status, status)


def reason(status: str, error: str | None) -> str:
    """Why the message to a recipient did not (or may not) arrive, in Chinese; "" when nothing
    went wrong (delivered, or still on its way)."""
    if status == "sent":
        return UNKNOWN_OUTCOME if (error or "").startswith("outcome unknown") else ""
    if status == "failed" and error:
        lowered = error.lower()
        for code, words in _BY_ERROR:
            if code in lowered:
                return words
    return _BY_STATUS.get(status, "")


def reject_word(code: str) -> str:
    return REJECT_WORDS.get(code, code)
