//go:build race

package hostile_test

// raceEnabled: the race detector keeps shadow memory and access history
// for memory the program has freed, so RSS is no measure of leaks.
const raceEnabled = true
