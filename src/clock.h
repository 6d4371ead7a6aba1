/* Monotonic time in seconds. Timeouts and deadlines use it, never the wall
 * clock, so a clock change cannot fire or starve a timeout. */
#ifndef FISH_CLOCK_H
#define FISH_CLOCK_H

double fish_now(void);

#endif
