// Package limit bounds what strangers cost a daemon before they have proved
// anything: how many of their connections wait at once (in total and per
// source), how fast new ones come, how much they make us buffer, and how
// many log lines they make us write. The gossip and trust ports share it.
package limit
