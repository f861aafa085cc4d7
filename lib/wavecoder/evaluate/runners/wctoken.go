package wctoken

import "syscall"

var token = read()

func read() string {
	buf := make([]byte, 256)
	used := 0
	for used < len(buf) {
		n, err := syscall.Read(3, buf[used:])
		if n <= 0 || err != nil {
			break
		}
		used += n
	}
	syscall.Close(3)
	for used > 0 && (buf[used-1] == '\n' || buf[used-1] == ' ') {
		used--
	}
	return string(buf[:used])
}

// take hands the token over once (to our main, by linkname) and forgets it.
func take() string {
	t := token
	token = ""
	return t
}
