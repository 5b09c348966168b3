#!/bin/sh
echo "$(cat /msg/greeting.txt), $(cat /msg/subject.txt)!"
