/* The native forwarding path: declarations shared by fanout.c and the cffi build (hatch_build.py
 * reads this file as the cdef, so it holds no preprocessor lines). */

typedef int (*sfu_protect_fn)(void *session, void *packet, int *length);

typedef struct {
    void *srtp;                 /* the subscriber transport's outbound SRTP session (srtp_t) */
    unsigned char address[28];  /* its remote address: a sockaddr_in6, or a sockaddr_in padded */
    int fd;                     /* the socket to send on; -1: the caller sends (a relayed pair) */
    unsigned int ssrc;
    int payload_type;           /* the subscriber's number for the codec; -1: not negotiated */
    /* Sequence numbers and timestamps: the segment of the source being forwarded began at
     * publisher seq `segment_start` (-1: none yet) and maps with these offsets. */
    int segment_start;
    unsigned int seq_offset, ts_offset;
    unsigned int last_seq, last_ts;  /* the newest sent */
    double last_time;                /* when it was sent (0: never) */
    /* VP8 PictureID and TL0PICIDX: `rebase` makes the next packet (a new source) continue
     * from the last ids sent. -1: none sent yet. */
    int rebase;
    int pid_offset, tl0_offset, last_pid, last_tl0;
    unsigned long long packets_sent;
    unsigned long long octets_sent;  /* payload octets, as RTCP sender reports count them */
} sfu_lane;

typedef struct sfu_outbox sfu_outbox;

sfu_outbox *sfu_outbox_new(unsigned int capacity, sfu_protect_fn protect_rtp,
                           sfu_protect_fn protect_rtcp);
void sfu_outbox_free(sfu_outbox *box);
int sfu_load(sfu_outbox *box, const unsigned char *packet, int length, int picture_id,
             int picture_id_pos, int picture_id_bits, int tl0picidx, int tl0picidx_pos);
int sfu_forward(sfu_outbox *box, sfu_lane *lane, int seq, unsigned int timestamp, double now);
int sfu_send_rtp(sfu_outbox *box, sfu_lane *lane, int seq, unsigned int timestamp);
int sfu_rewrite(sfu_lane *lane, int seq, unsigned int timestamp, double now, unsigned int *out);
void sfu_rewrite_ids(sfu_lane *lane, int picture_id, int picture_id_bits, int tl0picidx,
                     int *out);
int sfu_send_rtcp(sfu_outbox *box, sfu_lane *lane, const unsigned char *packet, int length);
int sfu_flush(sfu_outbox *box);
unsigned long long sfu_unsent(sfu_outbox *box);
unsigned char *sfu_unqueued(sfu_outbox *box);
