/* The per-packet end of the forwarding path. One subscriber's copy of a loaded packet gets its
 * lane's sequence number, timestamp, SSRC, payload type and VP8 ids (continuous across the
 * sources the lane is switched between), is protected in place with libsrtp (through the
 * function pointer of the copy pylibsrtp bundles), and queued; queued datagrams leave with one
 * sendmmsg(2) per batch. Whether and from which source to forward (layers, key frames, pauses)
 * is decided in Python (sfu/subscription.py), as is where a segment starts (sfu/rewriter.py);
 * the per-packet arithmetic is here, once, so that a fan-out makes no Python object per
 * subscriber. */

#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "fanout.h"

#define SFU_MAX_PACKET 1500
#define SFU_SLOT_SIZE (SFU_MAX_PACKET + 256) /* a packet and what SRTP adds to it */
#define SFU_SOCKADDR_SIZE 28

struct sfu_outbox {
    unsigned int capacity, start, count;
    int fd;
    sfu_protect_fn protect_rtp, protect_rtcp;
    unsigned char *slots;
    struct mmsghdr *messages;
    struct iovec *iovecs;
    sfu_lane **lanes;  /* per slot: whose RTP it is (its counters), or NULL for RTCP */
    int *plain;        /* per slot: the RTP packet's length before protection */
    unsigned long long unsent;
    unsigned char source[SFU_MAX_PACKET];
    int source_length, picture_id, picture_id_pos, picture_id_bits, tl0picidx, tl0picidx_pos;
    unsigned char unqueued[SFU_SLOT_SIZE]; /* a datagram for the caller to send itself */
};

sfu_outbox *sfu_outbox_new(unsigned int capacity, sfu_protect_fn protect_rtp,
                           sfu_protect_fn protect_rtcp) {
    sfu_outbox *box = calloc(1, sizeof *box);
    if (box == NULL || capacity == 0) {
        free(box);
        return NULL;
    }
    box->capacity = capacity;
    box->fd = -1;
    box->protect_rtp = protect_rtp;
    box->protect_rtcp = protect_rtcp;
    box->slots = malloc((size_t)capacity * SFU_SLOT_SIZE);
    box->messages = calloc(capacity, sizeof *box->messages);
    box->iovecs = calloc(capacity, sizeof *box->iovecs);
    box->lanes = calloc(capacity, sizeof *box->lanes);
    box->plain = calloc(capacity, sizeof *box->plain);
    if (!box->slots || !box->messages || !box->iovecs || !box->lanes || !box->plain) {
        sfu_outbox_free(box);
        return NULL;
    }
    for (unsigned int i = 0; i < capacity; i++) {
        box->iovecs[i].iov_base = box->slots + (size_t)i * SFU_SLOT_SIZE;
        box->messages[i].msg_hdr.msg_iov = &box->iovecs[i];
        box->messages[i].msg_hdr.msg_iovlen = 1;
        box->messages[i].msg_hdr.msg_namelen = SFU_SOCKADDR_SIZE;
    }
    return box;
}

void sfu_outbox_free(sfu_outbox *box) {
    if (box == NULL)
        return;
    free(box->slots);
    free(box->messages);
    free(box->iovecs);
    free(box->lanes);
    free(box->plain);
    free(box);
}

/* A datagram the socket refused is lost: take it off its stream's counters. */
static void refused(sfu_outbox *box, unsigned int index) {
    sfu_lane *lane = box->lanes[index];
    if (lane != NULL) {
        lane->packets_sent -= 1;
        lane->octets_sent -= (unsigned long long)(box->plain[index] - 12);
    }
    box->unsent += 1;
}

/* Send slots [start, end) on box->fd; a full buffer drops them all (as sendto would), another
 * error the one datagram it names. */
static void send_slots(sfu_outbox *box, unsigned int start, unsigned int end) {
    while (start < end) {
        int sent = sendmmsg(box->fd, box->messages + start, end - start, MSG_DONTWAIT);
        if (sent > 0) {
            start += (unsigned int)sent;
            continue;
        }
        unsigned int failed_end = (errno == EAGAIN || errno == ENOBUFS) ? end : start + 1;
        for (; start < failed_end; start++)
            refused(box, start);
    }
}

int sfu_flush(sfu_outbox *box) {
    if (box->count > box->start)
        send_slots(box, box->start, box->count);
    box->start = box->count = 0;
    return 0;
}

unsigned long long sfu_unsent(sfu_outbox *box) { return box->unsent; }

unsigned char *sfu_unqueued(sfu_outbox *box) { return box->unqueued; }

int sfu_load(sfu_outbox *box, const unsigned char *packet, int length, int picture_id,
             int picture_id_pos, int picture_id_bits, int tl0picidx, int tl0picidx_pos) {
    if (length < 12 || length > SFU_MAX_PACKET) {
        box->source_length = 0;
        return 0;
    }
    memcpy(box->source, packet, (size_t)length);
    box->source_length = length;
    box->picture_id = picture_id_bits == 7 || picture_id_bits == 15 ? picture_id : -1;
    box->picture_id_bits = picture_id_bits;
    box->tl0picidx = tl0picidx;
    /* Positions past the packet (a malformed descriptor) are never written. */
    int pid_width = picture_id_bits == 15 ? 2 : 1;
    box->picture_id_pos =
        picture_id_pos >= 12 && picture_id_pos + pid_width <= length ? picture_id_pos : -1;
    box->tl0picidx_pos = tl0picidx_pos >= 12 && tl0picidx_pos < length ? tl0picidx_pos : -1;
    return length;
}

int sfu_rewrite(sfu_lane *lane, int seq, unsigned int timestamp, double now, unsigned int *out) {
    if (lane->segment_start < 0 || ((seq - lane->segment_start) & 0x8000))
        return 0; /* older than the segment (or none started) */
    unsigned int out_seq = ((unsigned int)seq + lane->seq_offset) & 0xFFFF;
    unsigned int out_ts = timestamp + lane->ts_offset;
    if (!((out_seq - lane->last_seq) & 0x8000)) {
        lane->last_seq = out_seq;
        lane->last_ts = out_ts;
        lane->last_time = now;
    }
    out[0] = out_seq;
    out[1] = out_ts;
    return 1;
}

void sfu_rewrite_ids(sfu_lane *lane, int picture_id, int picture_id_bits, int tl0picidx,
                     int *out) {
    out[0] = out[1] = -1;
    if (picture_id >= 0) {
        int mask = picture_id_bits == 15 ? 0x7FFF : 0x7F;
        if (lane->rebase)
            lane->pid_offset = lane->last_pid >= 0 ? lane->last_pid + 1 - picture_id : 0;
        out[0] = (picture_id + lane->pid_offset) & mask;
        if (lane->last_pid < 0 || ((out[0] - lane->last_pid) & mask) < (mask >> 1))
            lane->last_pid = out[0];
    }
    if (tl0picidx >= 0) {
        if (lane->rebase)
            lane->tl0_offset = lane->last_tl0 >= 0 ? lane->last_tl0 + 1 - tl0picidx : 0;
        out[1] = (tl0picidx + lane->tl0_offset) & 0xFF;
        if (lane->last_tl0 < 0 || ((out[1] - lane->last_tl0) & 0xFF) < 0x80)
            lane->last_tl0 = out[1];
    }
    lane->rebase = 0;
}

/* Protect the `length` bytes in the next slot for `lane` and queue them (or, for a lane without
 * a socket of ours, leave them in box->unqueued): the protected length, negative when the
 * caller sends; 0 when protection failed. RTP counts as sent on the lane's counters (a datagram
 * refused later, or by the caller's send, is taken off again). */
static int protect_and_queue(sfu_outbox *box, sfu_lane *lane, unsigned char *slot, int length,
                             sfu_protect_fn protect, int rtp) {
    int protected_length = length;
    if (lane->srtp == NULL || protect(lane->srtp, slot, &protected_length) != 0)
        return 0;
    if (rtp) {
        lane->packets_sent += 1;
        lane->octets_sent += (unsigned long long)(length - 12);
    }
    if (lane->fd < 0)
        return -protected_length; /* written in box->unqueued (next_slot) */
    unsigned int index = box->count;
    if (lane->fd != box->fd) {
        if (index > box->start)
            send_slots(box, box->start, index);
        box->start = index;
        box->fd = lane->fd;
    }
    box->messages[index].msg_hdr.msg_name = lane->address;
    box->iovecs[index].iov_len = (size_t)protected_length;
    box->lanes[index] = rtp ? lane : NULL;
    box->plain[index] = length;
    index += 1;
    if (index == box->capacity) {
        send_slots(box, box->start, index);
        index = box->start = 0;
    }
    box->count = index;
    return protected_length;
}

static unsigned char *next_slot(sfu_outbox *box, sfu_lane *lane) {
    return lane->fd < 0 ? box->unqueued : box->slots + (size_t)box->count * SFU_SLOT_SIZE;
}

int sfu_send_rtp(sfu_outbox *box, sfu_lane *lane, int seq, unsigned int timestamp) {
    int length = box->source_length;
    if (length == 0 || lane->payload_type < 0)
        return 0;
    unsigned char *slot = next_slot(box, lane);
    memcpy(slot, box->source, (size_t)length);
    slot[1] = (unsigned char)((box->source[1] & 0x80) | (lane->payload_type & 0x7F));
    slot[2] = (unsigned char)(seq >> 8);
    slot[3] = (unsigned char)seq;
    slot[4] = (unsigned char)(timestamp >> 24);
    slot[5] = (unsigned char)(timestamp >> 16);
    slot[6] = (unsigned char)(timestamp >> 8);
    slot[7] = (unsigned char)timestamp;
    slot[8] = (unsigned char)(lane->ssrc >> 24);
    slot[9] = (unsigned char)(lane->ssrc >> 16);
    slot[10] = (unsigned char)(lane->ssrc >> 8);
    slot[11] = (unsigned char)lane->ssrc;
    if (box->picture_id >= 0 || box->tl0picidx >= 0) {
        int ids[2];
        sfu_rewrite_ids(lane, box->picture_id, box->picture_id_bits, box->tl0picidx, ids);
        int pid_pos = box->picture_id_pos;
        if (pid_pos >= 0 && ids[0] >= 0) {
            if (box->picture_id_bits == 15) {
                slot[pid_pos] = (unsigned char)(0x80 | (ids[0] >> 8));
                slot[pid_pos + 1] = (unsigned char)ids[0];
            } else {
                slot[pid_pos] = (unsigned char)ids[0];
            }
        }
        if (box->tl0picidx_pos >= 0 && ids[1] >= 0)
            slot[box->tl0picidx_pos] = (unsigned char)ids[1];
    }
    return protect_and_queue(box, lane, slot, length, box->protect_rtp, 1);
}

int sfu_forward(sfu_outbox *box, sfu_lane *lane, int seq, unsigned int timestamp, double now) {
    unsigned int out[2];
    if (box->source_length == 0 || lane->payload_type < 0 ||
        !sfu_rewrite(lane, seq, timestamp, now, out))
        return 0;
    return sfu_send_rtp(box, lane, (int)out[0], out[1]);
}

int sfu_send_rtcp(sfu_outbox *box, sfu_lane *lane, const unsigned char *packet, int length) {
    if (length < 8 || length > SFU_MAX_PACKET)
        return 0;
    unsigned char *slot = next_slot(box, lane);
    memcpy(slot, packet, (size_t)length);
    return protect_and_queue(box, lane, slot, length, box->protect_rtcp, 0);
}
